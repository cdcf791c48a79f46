# lintian, started before the package it will lint exists (giftbox.package.lint.LintianAhead).
#
# perl -e <this> -- /usr/share/lintian/bin/lintian   (lintian's resolved path)
#
# Loads what every run of lintian loads first (its modules, the code of every check its
# profile knows: about a second of perl compiling; and the profile itself, which reads the
# 1,500 tag descriptions: another 0.3 s), then waits for lintian's command line on
# stdin (arguments separated by NUL bytes; end of input ends it) and runs the lintian program
# itself in this interpreter: the same program, the same arguments, the same environment,
# the same exit code; only its compiling is done, and the program's own load of the profile,
# when it asks for the one loaded here (the same name, directories and user directories), is
# handed that profile's state instead of reading the same files again. If the loading fails
# in any way, the program is exec'ed afresh instead, as if nothing had been loaded. End of
# input with no command line (the build did not get that far): exit 0, having run nothing.
use strict;
use warnings;

my $program = $ARGV[0];
my ($bin) = $program =~ m{^(.*)/[^/]+$};
my @preload = (undef, [], 1);    # the arguments of lintian's own load, run without options
my $preloaded;                   # the profile loaded with them, handed over once

sub load_key {
    my ($name, $dirs, $user_dirs) = @_;
    return join "\0", defined $name ? "=$name" : '', ($user_dirs ? 1 : 0), @{ $dirs // [] };
}

my $loaded = eval {
    unshift @INC, "$bin/../lib";    # where lintian's own `use lib` points
    require Lintian::Pool;
    require Lintian::Profile;
    require Lintian::Processable::Installable;
    require Lintian::Processable::Buildinfo;
    require Lintian::Processable::Changes;
    require Lintian::Processable::Source;
    require Lintian::Changelog;
    require Lintian::Version;
    my $profile = Lintian::Profile->new;
    $profile->load(@preload);
    require $profile->check_path_by_name->{$_} for $profile->known_checks;
    $preloaded = $profile;
    my $load = \&Lintian::Profile::load;
    no warnings 'redefine';
    *Lintian::Profile::load = sub {
        my ($self, @args) = @_;
        if (defined $preloaded && load_key(@args) eq load_key(@preload)) {
            %{$self} = %{$preloaded};    # a Moo object: its attributes, as load left them
            undef $preloaded;
            return;
        }
        return $load->(@_);
    };
    1;
};

my $line = do { local $/; <STDIN> };
exit 0 unless defined $line && length $line;
my @args = split /\0/, $line, -1;
exec { $program } $program, @args or die "cannot run $program: $!\n" unless $loaded;
@ARGV = @args;
$0 = $program;
do $program;
die $@ if $@;
exit 0;
