"""Local stand-ins for provider APIs that speak their real wire formats."""
