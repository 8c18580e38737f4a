import math

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

import flordb as flor
from data import load_dataset, collate
from modeling import TinyBert

train_ds, eval_ds = load_dataset("sst2")
train_dl = DataLoader(train_ds, batch_size=flor.arg("batch_size", 32), shuffle=True, collate_fn=collate)
eval_dl = DataLoader(eval_ds, batch_size=64, collate_fn=collate)

model = TinyBert(num_labels=2)
optimizer = torch.optim.AdamW(model.parameters(), lr=flor.arg("lr", 5e-5))
num_epochs = flor.arg("epochs", 3)
total_steps = num_epochs * len(train_dl)
scheduler = get_linear_schedule_with_warmup(
    optimizer, num_warmup_steps=int(0.1 * total_steps), num_training_steps=total_steps
)

for epoch in flor.loop("epoch", range(num_epochs)):
    model.train()
    for step, batch in flor.loop("step", enumerate(tqdm(train_dl, desc=f"epoch {epoch}"))):
        outputs = model(**batch)
        loss = outputs.loss
        flor.log("batch_loss", loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # keep updates sane
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()

    # evaluation
    model.eval()
    correct = total = 0
    for batch in eval_dl:
        with torch.no_grad():
            logits = model(**batch).logits
        preds = logits.argmax(-1)
        correct += (preds == batch["labels"]).sum().item()
        total += len(preds)
    flor.log("accuracy", correct / total)
    print(f"epoch {epoch}: ppl-free accuracy {correct / total:.3f}", math.nan)
