from opentess.cli import main

main()
