"""age_net: the dual-channel crater age network (timm trunk + attribute branch). Arrives with its own issue."""
