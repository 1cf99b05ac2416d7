"""Check this workstation: what the machine is and has, then a reference measurement set against its roofline."""
