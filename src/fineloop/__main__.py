from fineloop.cli import main

main()
