def main():
    print("mcuforge")
