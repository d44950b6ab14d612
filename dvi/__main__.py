from dvi.cli import main

main()
