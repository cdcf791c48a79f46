from giftbox.cli import main

main()
