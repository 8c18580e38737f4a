import torch
from torch.utils.data import DataLoader
import flordb as flor

from data import load_dataset, collate
from modeling import TinyBert

train_ds, eval_ds = load_dataset("sst2")
train_dl = DataLoader(train_ds, batch_size=32, shuffle=True, collate_fn=collate)
eval_dl = DataLoader(eval_ds, batch_size=64, collate_fn=collate)

model = TinyBert(num_labels=2)
optimizer = torch.optim.AdamW(model.parameters(), lr=flor.arg("lr", 5e-5))
num_epochs = flor.arg("epochs", 3)

for epoch in flor.loop("epoch", range(num_epochs)):
    flor.log("start_lr", optimizer.param_groups[0]["lr"])
    model.train()
    for batch in flor.loop("step", train_dl):
        outputs = model(**batch)
        loss = outputs.loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    model.eval()
    correct = total = 0
    for batch in eval_dl:
        with torch.no_grad():
            logits = model(**batch).logits
        preds = logits.argmax(-1)
        correct += (preds == batch["labels"]).sum().item()
        total += len(preds)
    flor.log("accuracy", correct / total)
