"""The pure scoring/selection core and thin engine adapters (FAISS, Spark)."""
