"""What every stage shares: errors, atomic writes, output checks, config loading, bounded file reads, validation, progress, the torch device."""
