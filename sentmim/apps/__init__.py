"""Applications built on the library: the demo (and the corpus it trains on) and the VAE benchmark.

They are installed with the package, so that `sentmim demo` and `sentmim benchmark` work after `pip install`, but
they are not part of the library's core: they import it, and nothing in the core imports them.
"""
