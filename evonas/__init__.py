"""evonas: evolutionary neural-architecture search for text models, in JAX."""
