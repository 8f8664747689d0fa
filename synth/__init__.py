"""DeepInversion image synthesis from the teacher alone. Planned: issue 5."""
