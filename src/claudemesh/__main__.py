from claudemesh.cli.main import main

main()
