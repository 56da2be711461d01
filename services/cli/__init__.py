"""The `shardgate` console command."""

def main() -> None:
    print("shardgate")
