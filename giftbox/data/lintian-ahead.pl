# lintian, started before the package it will lint exists (giftbox.package.lint.LintianAhead).
#
# perl -e <this> -- /usr/share/lintian/bin/lintian   (lintian's resolved path)
#
# Loads what every run of lintian loads first (its modules, and the code of every check its
# profile knows: about a second of perl compiling), then waits for lintian's command line on
# stdin (arguments separated by NUL bytes; end of input ends it) and runs the lintian program
# itself in this interpreter: the same program, the same arguments, the same environment,
# the same exit code; only its compiling is done. If the loading fails in any way, the
# program is exec'ed afresh instead, as if nothing had been loaded. End of input with no
# command line (the build did not get that far): exit 0, having run nothing.
use strict;
use warnings;

my $program = $ARGV[0];
my ($bin) = $program =~ m{^(.*)/[^/]+$};
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
    $profile->load(undef, [], 1);
    require $profile->check_path_by_name->{$_} for $profile->known_checks;
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
