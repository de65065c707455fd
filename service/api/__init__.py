"""HTTP routes: thin layers over the data plane."""
