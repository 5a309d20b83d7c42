"""The demo network `swapflow up` and the tests start from: its cities, cabinets, packs, riders, prices
and accounts."""
