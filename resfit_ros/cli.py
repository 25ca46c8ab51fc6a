"""`resfit-ros <verb>`: placeholder replaced below."""
def main(argv=None):
    return 0
