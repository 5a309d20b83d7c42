"""One router per area of the console, each with its templates under templates/<area>/."""
