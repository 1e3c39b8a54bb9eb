"""What a running service tells its operators: health and metrics, never secrets."""
