"""The yardsticks and show pieces, apart from the product: the demo, the bench (with
its relay and ring yardsticks and CPU accounting) and the simulated participants."""
