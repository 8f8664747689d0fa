from hwprune.cli import main

main()
