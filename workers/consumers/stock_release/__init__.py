"""The stock-release consumer: a cancelled order's units go back on sale, once."""
