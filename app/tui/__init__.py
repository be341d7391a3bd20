"""The Textual dashboard (`vc flow tui`)."""
