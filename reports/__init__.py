"""Analytics over the store: traffic, top talkers, entities, budget and the monthly report."""
