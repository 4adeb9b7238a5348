from shilian.cli import main

main()
