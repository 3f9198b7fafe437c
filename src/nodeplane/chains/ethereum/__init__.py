"""Ethereum: execution clients (geth, reth, nethermind, erigon; anvil on devnet) and consensus
clients (lighthouse, prysm, lodestar), one module per client."""

from nodeplane.chains.ethereum.adapter import ETHEREUM, EthereumAdapter

__all__ = ["ETHEREUM", "EthereumAdapter"]
