from shardgate.cli import main

main()
