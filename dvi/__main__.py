from dvi.interface.cli import main

main()
