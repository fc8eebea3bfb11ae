"""One module per CLI verb or verb group; each returns what it computed and prints for the user."""
