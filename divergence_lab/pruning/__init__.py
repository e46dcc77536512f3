"""Pruning at or near initialisation: masks, saliency scores, Concrete Ticket Search, lottery tickets."""
