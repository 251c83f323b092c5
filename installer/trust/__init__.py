"""What is trusted: keys and signatures, the root chain, the TUF client, rings."""
