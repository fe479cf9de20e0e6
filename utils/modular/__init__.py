"""Chapter 3: a one-layer transformer that grokked ``a + b mod p``."""
