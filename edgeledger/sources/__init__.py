"""What sensors speak: simulated and serial sources."""
