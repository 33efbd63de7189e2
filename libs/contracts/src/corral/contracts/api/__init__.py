"""The public wire shapes of the Managed Agents API, as Corral serves them."""
