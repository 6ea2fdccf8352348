from pgsl.cli import app

app()
