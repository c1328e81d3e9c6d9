"""What a run leaves behind: logger set-up and closing, validation images, run-directory files."""
