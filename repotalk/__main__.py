from repotalk.cli import app

app(prog_name="repotalk")
