"""Usage alerts: catalog rules measured against each account's current bill and usage."""
