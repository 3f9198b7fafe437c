"""The Kubernetes backend: the BlockchainNode resource, its rendering into Kubernetes objects."""
