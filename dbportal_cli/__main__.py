from dbportal_cli.main import main

main()
