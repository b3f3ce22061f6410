"""The embedded procedural world: scenes and the shared lexicon (scene, lexicon), the grounding
checker (grounding), scene sampling and images (render), human and terse captions (captions), web
alt-text noise (noise), one image sample (samples), the downstream-task items with their checkers
(items, vqa, nlvr, video, tasks), and writing all of it (generate)."""
