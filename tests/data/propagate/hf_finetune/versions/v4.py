"""Fine-tune a tiny BERT on SST-2."""
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

import flordb as flor
from data import load_dataset, collate
from modeling import TinyBert

device = "cuda" if torch.cuda.is_available() else "cpu"


def train_epoch(model, dataloader, optimizer, scheduler, scaler, epoch, accum_steps):
    model.train()
    running = 0.0
    for step, inputs in flor.loop("step", enumerate(tqdm(dataloader, desc=f"epoch {epoch}"))):
        inputs = {k: v.to(device) for k, v in inputs.items()}
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            outputs = model(**inputs)
            loss = outputs.loss / accum_steps
        scaler.scale(loss).backward()
        if (step + 1) % accum_steps == 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad()
        running += loss.item()
    return running / len(dataloader)


@torch.no_grad()
def evaluate(model, dataloader):
    model.eval()
    correct = total = 0
    for inputs in dataloader:
        inputs = {k: v.to(device) for k, v in inputs.items()}
        logits = model(**inputs).logits
        preds = logits.argmax(-1)
        correct += (preds == inputs["labels"]).sum().item()
        total += len(preds)
    return {"accuracy": correct / total}


def main():
    train_ds, eval_ds = load_dataset("sst2")
    train_dl = DataLoader(train_ds, batch_size=flor.arg("batch_size", 32), shuffle=True, collate_fn=collate)
    eval_dl = DataLoader(eval_ds, batch_size=64, collate_fn=collate)

    model = TinyBert(num_labels=2).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=flor.arg("lr", 5e-5))
    num_epochs = flor.arg("epochs", 3)
    accum_steps = flor.arg("accum_steps", 2)
    total_steps = num_epochs * len(train_dl) // accum_steps
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=int(0.1 * total_steps), num_training_steps=total_steps
    )
    scaler = torch.cuda.amp.GradScaler(enabled=device == "cuda")
    best_acc = 0.0

    with flor.checkpointing(model=model, optimizer=optimizer, scheduler=scheduler):
        for epoch in flor.loop("epoch", range(num_epochs)):
            train_loss = train_epoch(model, train_dl, optimizer, scheduler, scaler, epoch, accum_steps)
            metrics = evaluate(model, eval_dl)
            flor.log("train_loss", train_loss)
            flor.log("accuracy", metrics["accuracy"])
            if metrics["accuracy"] > best_acc:
                best_acc = metrics["accuracy"]
                torch.save(model.state_dict(), "best.pt")


if __name__ == "__main__":
    main()
