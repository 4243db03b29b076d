from claudemesh.cli.entry import main

main()
