"""The MLP, its losses, its optimiser factory and the LightningModule that trains it."""
