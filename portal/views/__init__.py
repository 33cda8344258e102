"""Server-rendered pages: thin, they call one service or selector each."""
