"""Model files: safe reading of safetensors and pickles, hashes, model folders, single-file
checkpoints, LoRA / LyCORIS and textual-inversion embeddings. Nothing here touches the network,
and no model file is ever unpickled without restriction."""
