"""Training: the KD math (kd_loss, label_kd), dataset loading (data), student initialisation
(student_init) and the TRL trainer subclass (trainer). Used by pipeline/stages/train.py."""
