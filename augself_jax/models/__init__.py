"""ResNet backbones and the one MLP builder."""
