"""The phone page's areas, one router each."""
