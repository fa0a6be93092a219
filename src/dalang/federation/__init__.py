"""Federation: site agents and the coordinator that sends plan fragments to them."""
