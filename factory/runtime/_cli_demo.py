"""``factory demo``: placeholder replaced below."""
import typer
def demo() -> None:
    """Run the store walkthrough."""
