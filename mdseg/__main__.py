from mdseg.cli import main

main()
