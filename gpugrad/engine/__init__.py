"""The autograd engine: recording and the graph's nodes (graph), reverse mode (backward),
transforms composed in any order (transforms), and recomputation (checkpoint)."""
