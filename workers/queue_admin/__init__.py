"""The operators' queue tool: depths and ages, dead letters, redrive."""
